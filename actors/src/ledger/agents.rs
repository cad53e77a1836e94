//! Agents, their heartbeats, samples and state transitions.
