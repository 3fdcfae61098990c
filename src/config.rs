//! Runtime configuration: firmware-config/base.toml plus a per-board overlay, CLI overrides.
