#![allow(dead_code)]

pub mod chart;
pub mod cluster;
pub mod dns;
pub mod node;
pub mod operator;
pub mod rbac;
pub mod unbound;
