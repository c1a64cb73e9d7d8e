//! Helpers for tests that boot guests under the `ringvisor` binary.
