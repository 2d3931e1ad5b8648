//! One module per topic.

mod daemon;
mod durability;
mod hostile_clients;
mod peer_uid;
mod refusals;
mod running;
mod tasks;
