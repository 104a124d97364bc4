"""What each ``sessionizer`` subcommand does; ``service.cli`` only parses arguments."""
