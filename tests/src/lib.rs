//! Shared helpers for the live-broker suite.
