//! The integration-test binary: drives the real `unitwarden` executable against
//! real components (a private `systemd --user` manager per test, see
//! `support`). One binary, so the support code is compiled once.

mod support;

mod harness_selftest;
mod watchdog;
