//! The integration-test binary: drives the real `unitwarden` executable against
//! real components (a private `systemd --user` manager per test, see
//! `support`; a Debian booted by systemd-nspawn for the package, see `deb`).
//! One binary, so the support code is compiled once.

mod prom;
mod smtp;
mod support;

mod control;
mod deb;
mod doctor;
mod email;
mod faults;
mod files;
mod fleet;
mod harness_selftest;
mod logging;
mod probes;
mod watchdog;
