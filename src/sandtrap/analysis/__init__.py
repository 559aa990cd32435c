"""The analyst's side: queries over the SQLite index, replay, forensic export, rendering."""
