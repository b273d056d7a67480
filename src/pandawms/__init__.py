"""pandawms: an independent implementation of the PanDA server.

The wire protocol (field names, status codes, formats) follows what the real PanDA clients
(panda-client, the pilot, Harvester) send and expect; everything behind it is our own design.
"""

__version__ = "0.1.0"
