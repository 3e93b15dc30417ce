"""The search: command line, experiment assembly (searcher, scheduler, resources) and export."""
