//! Write operations for plugins, bindings and tenant configuration, run inside the
//! single writer. Like every operation, each checks first and then writes.

use redb::ReadableTable;

use super::PluginCaps;
use super::codec::{decode, encode};
use super::tables::Tables;
use super::writer::{OpError, WriteCtx};
use crate::error::{Code, Error};
use crate::limits::{self, Holder};
use crate::model::{Alert, AlertEvent, Binding, Plugin, PluginKind, Stage, TenantConfig, UserConfig};

type OpResult<T> = Result<T, OpError>;

fn require_tenant(ctx: &WriteCtx<'_, '_>, tenant: &str) -> OpResult<()> {
    if ctx.tables.tenants.get(tenant)?.is_none() {
        return Err(Error::not_found("tenant").into());
    }
    Ok(())
}

fn load_plugin(ctx: &WriteCtx<'_, '_>, tenant: &str, digest: &str) -> OpResult<Option<Plugin>> {
    Ok(match ctx.tables.plugins.get((tenant, digest))? {
        Some(v) => Some(decode(v.value())?),
        None => None,
    })
}

pub fn put_plugin(
    ctx: &mut WriteCtx<'_, '_>,
    plugin: Plugin,
    component: &[u8],
    artifact: &[u8],
    caps: &PluginCaps,
) -> OpResult<(Plugin, bool)> {
    require_tenant(ctx, &plugin.tenant)?;
    if let Some(existing) = load_plugin(ctx, &plugin.tenant, &plugin.digest)? {
        return Ok((existing, false));
    }
    let (count, bytes) = plugin_usage(ctx.tables, &plugin.tenant)?;
    if let Some(max) = caps.plugins
        && count >= max
    {
        return Err(limits::exceeded(Holder::Tenant, "max_plugins", format!("{count} of {max} plugins")).into());
    }
    if let Some(max) = caps.bytes
        && bytes + plugin.size > max
    {
        let detail = format!("{bytes} bytes stored, {} more would pass {max}", plugin.size);
        return Err(limits::exceeded(Holder::Tenant, "max_plugin_bytes", detail).into());
    }
    let key = (plugin.tenant.as_str(), plugin.digest.as_str());
    let t = &mut *ctx.tables;
    t.plugins.insert(key, encode(&plugin).as_slice())?;
    t.plugin_components.insert(key, component)?;
    t.plugin_artifacts.insert(key, artifact)?;
    Ok((plugin, true))
}

pub fn replace_artifact(ctx: &mut WriteCtx<'_, '_>, tenant: &str, digest: &str, artifact: &[u8]) -> OpResult<()> {
    if load_plugin(ctx, tenant, digest)?.is_none() {
        return Err(Error::not_found("plugin").into());
    }
    ctx.tables.plugin_artifacts.insert((tenant, digest), artifact)?;
    Ok(())
}

pub fn delete_plugin(ctx: &mut WriteCtx<'_, '_>, tenant: &str, digest: &str) -> OpResult<Plugin> {
    let plugin = load_plugin(ctx, tenant, digest)?.ok_or_else(|| Error::not_found("plugin"))?;
    for entry in ctx.tables.bindings.range((tenant, "", "", 0)..)? {
        let (k, v) = entry?;
        if k.value().0 != tenant {
            break;
        }
        let binding: Binding = decode(v.value())?;
        if binding.plugin == digest {
            return Err(Error::new(
                Code::PluginInUse,
                format!(
                    "plugin is bound to queue {} ({}, {}); unbind it first",
                    binding.queue,
                    binding.kind.as_str(),
                    binding.stage.as_str()
                ),
            )
            .into());
        }
    }
    let t = &mut *ctx.tables;
    t.plugins.remove((tenant, digest))?;
    t.plugin_components.remove((tenant, digest))?;
    t.plugin_artifacts.remove((tenant, digest))?;
    Ok(plugin)
}

/// A tenant's plugins: how many, and their components' bytes together.
pub fn plugin_usage(t: &Tables<'_>, tenant: &str) -> OpResult<(u64, u64)> {
    let (mut count, mut bytes) = (0, 0);
    for entry in t.plugins.range((tenant, "")..)? {
        let (k, v) = entry?;
        if k.value().0 != tenant {
            break;
        }
        let plugin: Plugin = decode(v.value())?;
        count += 1;
        bytes += plugin.size;
    }
    Ok((count, bytes))
}

fn binding_count(t: &Tables<'_>, tenant: &str) -> OpResult<u64> {
    let mut count = 0;
    for entry in t.bindings.range((tenant, "", "", 0)..)? {
        if entry?.0.value().0 != tenant {
            break;
        }
        count += 1;
    }
    Ok(count)
}

pub fn put_binding(ctx: &mut WriteCtx<'_, '_>, binding: Binding, max_bindings: Option<u64>) -> OpResult<Binding> {
    let plugin = load_plugin(ctx, &binding.tenant, &binding.plugin)?.ok_or_else(|| Error::not_found("plugin"))?;
    if plugin.kind != binding.kind {
        return Err(Error::validation(format!(
            "plugin {} is a {}, not a {}",
            plugin.digest,
            plugin.kind.as_str(),
            binding.kind.as_str()
        ))
        .into());
    }
    let key = (binding.tenant.as_str(), binding.queue.as_str(), binding.kind.as_str(), binding.stage.code());
    if let Some(max) = max_bindings
        && ctx.tables.bindings.get(key)?.is_none()
    {
        let count = binding_count(ctx.tables, &binding.tenant)?;
        if count >= max {
            return Err(limits::exceeded(Holder::Tenant, "max_bindings", format!("{count} of {max} bindings")).into());
        }
    }
    ctx.tables.bindings.insert(key, encode(&binding).as_slice())?;
    Ok(binding)
}

pub fn delete_binding(
    ctx: &mut WriteCtx<'_, '_>,
    tenant: &str,
    queue: &str,
    kind: PluginKind,
    stage: Stage,
) -> OpResult<Binding> {
    let key = (tenant, queue, kind.as_str(), stage.code());
    let binding: Binding = match ctx.tables.bindings.get(key)? {
        Some(v) => decode(v.value())?,
        None => return Err(Error::not_found("binding").into()),
    };
    ctx.tables.bindings.remove(key)?;
    Ok(binding)
}

pub fn put_tenant_config(ctx: &mut WriteCtx<'_, '_>, tenant: &str, config: &TenantConfig) -> OpResult<()> {
    require_tenant(ctx, tenant)?;
    ctx.tables.tenant_config.insert(tenant, encode(config).as_slice())?;
    Ok(())
}

pub fn put_user_config(ctx: &mut WriteCtx<'_, '_>, tenant: &str, user_id: &str, config: &UserConfig) -> OpResult<()> {
    require_tenant(ctx, tenant)?;
    ctx.tables.user_config.insert((tenant, user_id), encode(config).as_slice())?;
    Ok(())
}

pub fn put_alert(ctx: &mut WriteCtx<'_, '_>, alert: &Alert, event: &AlertEvent) -> OpResult<()> {
    let t = &mut *ctx.tables;
    t.alerts.insert((alert.tenant.as_str(), alert.id.as_str()), encode(alert).as_slice())?;
    let n = t.meta.get("alert_seq")?.map(|v| v.value()).unwrap_or(0) + 1;
    t.meta.insert("alert_seq", n)?;
    t.alert_events.insert((alert.tenant.as_str(), n), encode(event).as_slice())?;
    Ok(())
}
