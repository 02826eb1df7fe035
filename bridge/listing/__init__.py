"""Reading events back for ListEvents: the query, the markers, and how an event and its delivery look."""
