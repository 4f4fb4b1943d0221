//! Settings for what the server reports about itself: access log, error log, metrics.

use clap::Args;

/// Logging and metrics flags, flattened into [`super::Settings`].
#[derive(Debug, Clone, Default, Args)]
pub struct ObserveSettings {}
