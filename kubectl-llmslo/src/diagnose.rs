//! `diagnose`: collect (cluster or local), analyze, report, and return the
//! exit status.

use crate::{cli::DiagnoseArgs, collection::Collection, exit::Status, gather, local};

pub async fn run(args: DiagnoseArgs) -> anyhow::Result<Status> {
    let collection = if args.local {
        local::collect(&args).await?
    } else {
        match gather::collect(&args).await? {
            Some(collection) => collection,
            None => return Ok(Status::Ok),
        }
    };
    // TODO: analyze and report the collection; until then only the
    // collection's own outcome decides the exit status.
    Ok(collection_status(&collection))
}

/// Exit status from the nodes' outcomes alone.
fn collection_status(collection: &Collection) -> Status {
    let failed = collection
        .nodes
        .iter()
        .filter(|node| node.failure.is_some())
        .count();
    let interrupted = collection.nodes.iter().any(|node| {
        node.failure
            .as_ref()
            .is_some_and(|failure| failure.code == gather::verdict::code::INTERRUPTED)
    });
    if interrupted {
        Status::Interrupted
    } else if failed == 0 {
        Status::Ok
    } else if collection.nodes.iter().any(|node| node.result.is_some()) {
        Status::Partial
    } else {
        Status::Error
    }
}
