"""Starting the services the hub needs when none are configured: the embedded default."""
