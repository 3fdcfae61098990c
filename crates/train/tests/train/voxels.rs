//! Integration tests of [`shapecast_train::voxels`].
