//! `sluice audit`: the security audit log.

use clap::Args;

use super::jobs::urlencode;
use super::output::Output;
use super::{CliError, Client};

#[derive(Args)]
pub struct AuditArgs {
    /// Only this tenant's events.
    #[arg(long = "of-tenant")]
    of_tenant: Option<String>,
    /// Events after this sequence number.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Most events to show.
    #[arg(long, default_value_t = 100)]
    limit: usize,
}

/// Example: sluice audit --of-tenant acme --limit 20
pub async fn run(client: &Client, out: Output, args: AuditArgs) -> Result<(), CliError> {
    let mut path = format!("/v1/audit?after={}&limit={}", args.after, args.limit);
    if let Some(tenant) = &args.of_tenant {
        path.push_str(&format!("&tenant={}", urlencode(tenant)));
    }
    let page = client.get(&path).await?;
    out.rows(
        &page,
        page["events"].as_array().map_or(&[], |v| v),
        &["seq", "at", "action", "tenant", "actor", "detail"],
    );
    Ok(())
}
