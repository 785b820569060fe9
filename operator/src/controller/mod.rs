//! The TrafficSplit controller.

use crate::cli::ControllerArgs;

pub async fn run(_args: ControllerArgs) -> anyhow::Result<()> {
    anyhow::bail!("the controller is not implemented yet")
}

pub fn crd_yaml() -> anyhow::Result<String> {
    anyhow::bail!("the TrafficSplit CRD is not implemented yet")
}
