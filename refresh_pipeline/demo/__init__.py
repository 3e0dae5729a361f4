"""The demo production database: a commuter bus service, and its masking policy."""
