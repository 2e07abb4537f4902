"""Documents: file upload and download, knowledge base, search."""
