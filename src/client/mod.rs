//! (stub: being written; see ARCHITECTURE.md)
