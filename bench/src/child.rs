//! Starting a server under test as a child process: it prints `listening <addr>` first and
//! exits when its standard input closes (or when the child handle is dropped).

/// Spawns `cmd` (standard input and output piped, killed on drop) and waits for its
/// `listening <addr>` line; the child and the address.
pub async fn spawn_listening(
    mut cmd: tokio::process::Command,
) -> Result<(tokio::process::Child, String), String> {
    use tokio::io::AsyncBufReadExt;
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.as_std().get_program()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = lines
        .next_line()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the server exited")?;
    let addr = line
        .strip_prefix("listening ")
        .ok_or_else(|| format!("unexpected first line: {line}"))?;
    Ok((child, addr.to_owned()))
}
