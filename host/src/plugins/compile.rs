//! Compiling an upload, bounded in time. Cranelift can take seconds and hundreds
//! of MB on a large component, so the server compiles in a child process (its own
//! binary, `sluice compile-plugin`) and kills it at the limit. The artifact is
//! stored and later loaded with `Component::deserialize` in a few ms.

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::engine;
use super::limits::PluginLimits;
use crate::error::{Code, Error, Result};

/// How uploads get compiled.
#[derive(Clone, Debug)]
pub enum Compiler {
    /// In a child process running this binary's `compile-plugin` (the server).
    Subprocess(PathBuf),
    /// In this process, unbounded (the SDK's test harness).
    InProcess,
}

impl Compiler {
    pub async fn precompile(&self, engine: &wasmtime::Engine, bytes: &[u8], limits: &PluginLimits) -> Result<Vec<u8>> {
        match self {
            Compiler::InProcess => engine.precompile_component(bytes).map_err(|e| compile_error(&e.to_string())),
            Compiler::Subprocess(exe) => subprocess(exe, bytes, limits).await,
        }
    }
}

fn compile_error(reason: &str) -> Error {
    Error::new(Code::PluginInvalid, format!("the component does not compile: {reason}"))
}

/// The arguments that make the child's engine match the server's.
pub fn engine_args(limits: &PluginLimits) -> Vec<String> {
    vec![
        format!("--plugin-concurrent-calls={}", limits.concurrent_calls),
        format!("--plugin-memory-mib={}", limits.memory_bytes >> 20),
        format!("--plugin-table-elements={}", limits.table_elements),
        format!("--plugin-instances={}", limits.instances),
    ]
}

async fn subprocess(exe: &PathBuf, bytes: &[u8], limits: &PluginLimits) -> Result<Vec<u8>> {
    let mut child = tokio::process::Command::new(exe)
        .arg("compile-plugin")
        .args(engine_args(limits))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::internal(format!("cannot start the plugin compiler: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = bytes.to_vec();
    tokio::spawn(async move {
        let _ = stdin.write_all(&input).await;
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let work = async {
        let (mut artifact, mut errors) = (Vec::new(), Vec::new());
        let (a, b) = tokio::join!(stdout.read_to_end(&mut artifact), stderr.read_to_end(&mut errors));
        a.and(b).map_err(|e| Error::internal(e.to_string()))?;
        let status = child.wait().await.map_err(|e| Error::internal(e.to_string()))?;
        Ok::<_, Error>((status, artifact, errors))
    };
    match tokio::time::timeout(limits.compile_timeout, work).await {
        Err(_) => Err(Error::new(
            Code::PluginInvalid,
            format!("compiling took longer than {} s; the compiler was stopped", limits.compile_timeout.as_secs()),
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok((status, artifact, errors))) if status.success() => {
            let _ = errors;
            Ok(artifact)
        }
        Ok(Ok((_, _, errors))) => Err(compile_error(String::from_utf8_lossy(&errors).trim())),
    }
}

/// The child's side: read a component on stdin, write its artifact on stdout.
pub fn compile_stdin_to_stdout(limits: &PluginLimits) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    let engine = engine::engine(limits)?;
    let artifact = engine.precompile_component(&bytes)?;
    std::io::stdout().write_all(&artifact)?;
    Ok(())
}
