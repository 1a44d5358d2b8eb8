"""The database: engine and schema, and the ledger of who got which campaign."""
