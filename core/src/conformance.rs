//! Conformance suites for the environment traits.
