//! TEST DOUBLE (being written).
