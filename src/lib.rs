//! unitwarden keeps a host's systemd services running: it watches units over D-Bus, restarts
//! the ones that die with capped, backed-off attempts, and checks harder in critical windows.

pub mod alert;
pub mod alertmanager;
pub mod args;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod diagnosis;
pub mod doctor;
pub mod files;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod policy;
pub mod polkit;
pub mod probe;
pub mod resources;
pub mod selfalert;
pub mod state;
pub mod systemd;
#[cfg(test)]
mod testing;
pub mod text;
pub mod unit;
pub mod window;
