//! Hot reload of a serving mirror: an edit that compiles changes what new requests do without
//! a restart; an edit with errors is reported and the running pipeline keeps serving.

use std::time::Duration;

use crate::harness::*;

const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn an_edited_route_serves_without_a_restart_and_a_bad_edit_changes_nothing() {
    require_tools(&["docker-registry", "skopeo", "umoci"]);
    let reg = Registry::start(RegistryAuth::None);
    seed(&reg);
    let routes = ": .manifests head, get\n:   .resolve\n: .blobs head, get\n:   .pull\n";
    let acr = Acr::start(&pipeline(&reg.url(), &[], &[], routes));
    let tags = format!("{}/v2/library/test/tags/list", acr.url());
    let get = || fetch("GET", &tags, &[]);

    // No `.tags` route yet.
    let r = get();
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(oci_code(&r.text()), "UNSUPPORTED");

    // Add it: new requests use it, the process is the same.
    let pid = acr.pid();
    let text = std::fs::read_to_string(acr.runmd()).expect("read runmd");
    let edited = text.replace(
        ": .blobs head, get\n",
        ": .tags get\n:   .resolve\n: .blobs head, get\n",
    );
    assert_ne!(edited, text);
    std::fs::write(acr.runmd(), &edited).expect("write runmd");
    assert!(
        wait_until(PATIENCE, || get().status == 200),
        "the new route never served\n{}",
        acr.log()
    );
    let r = get();
    assert!(r.text().contains("\"1\""), "{}", r.text());
    assert_eq!(acr.pid(), pid);
    assert!(acr.log().contains("reloaded the pipeline"), "{}", acr.log());

    // A bad edit: reported with its diagnostic, and the running pipeline keeps serving.
    let broken = edited.replace(":   .resolve\n: .blobs", ":   .resolv\n: .blobs");
    assert_ne!(broken, edited);
    std::fs::write(acr.runmd(), &broken).expect("write runmd");
    assert!(
        wait_until(PATIENCE, || acr.log().contains("did you mean '.resolve'?")),
        "the bad edit was not reported\n{}",
        acr.log()
    );
    assert_eq!(get().status, 200);
    acr.assert_serves(Some(("library/test", "1")));
    assert!(acr.is_running());
}
