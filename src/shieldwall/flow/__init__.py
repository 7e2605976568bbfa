"""Data-flow control: labels on what a session has seen, fingerprints that survive
copying, and source → sink rules checked before anything leaves."""
