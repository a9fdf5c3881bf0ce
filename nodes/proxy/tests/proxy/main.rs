//! The proxy's integration tests, one binary (each test file as its own binary compiled and
//! linked the proxy and the cluster client again): `bounds` (against a real storage node),
//! `protocol` (bad input and the proxy's bounds) and `tls` (client TLS).

// Tests on the real environment: real time and sockets are what they exercise.
#![allow(clippy::disallowed_methods)]

mod bounds;
mod pki;
mod protocol;
mod support;
mod tls;
