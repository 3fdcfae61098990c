//! Integration tests of [`shapecast_train::mesh`].
