//! The `portent` command line.

#![allow(dead_code)] // temporary while the subcommands are wired up

mod plot;

fn main() {}
