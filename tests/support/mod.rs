#![allow(dead_code)]

pub mod cluster;
pub mod dns;
pub mod node;
