//! One module per topic.

mod attacks;
mod attacks_net;
mod attacks_ns;
mod checkpoints;
mod clean_output;
mod cost;
mod crash;
mod daemon;
mod durability;
mod events;
mod exhaustion;
mod hostile_clients;
mod hostile_repo;
mod limits;
mod locks;
mod network;
mod peer_uid;
mod private_repo;
mod profiles;
mod rate_limit;
mod refusals;
mod running;
mod systemd;
mod task_isolation;
mod tasks;
