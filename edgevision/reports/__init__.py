"""Reading runs back: compare (table, Pareto plot, HTML), recommend, and terminal rendering."""
