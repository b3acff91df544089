//! Delivery against a real SQLite store.
