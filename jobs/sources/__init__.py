"""The ingest job's source adapters, one module per real-data source (CrowdFlower, S3-Rec, COCO):
how its files are read and become pinpipe's tables and quarantine rows. ``jobs.ingest`` runs them;
they are not jobs of their own."""
