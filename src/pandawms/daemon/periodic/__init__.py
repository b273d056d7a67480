"""The daemon's periodic work, one module per domain it serves; :mod:`pandawms.daemon.catalog` lists them."""
