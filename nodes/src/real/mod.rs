//! The real environment: tokio time, tokio TCP, fjall on the local file system.
