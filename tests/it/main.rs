//! The one integration-test binary: every module shares a single link step.

mod catalog;
mod cli;
