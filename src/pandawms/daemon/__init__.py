"""The periodic server-side work (``pandawms daemon``): a runner and its tasks."""
