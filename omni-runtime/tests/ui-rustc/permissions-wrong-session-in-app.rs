// A real app: the model's permissions are for another session type than the server's. The
// error is reported where the collection is registered (only there is the server's session
// type known), and names the offending impl with its location.
use omni_runtime::prelude::*;

#[derive(Default)]
struct Session;
#[derive(Default)]
struct OtherSession;

#[derive(Model, Clone, Default)]
struct Player {
    name: String,
}

impl Permissions<OtherSession> for Player {}

#[collection(model = Player)]
struct Players;
impl CollectionPermissions<Session> for Players {}

fn main() {
    let _ = Omni::<Session>::new().collection(Players::with([]));
}
