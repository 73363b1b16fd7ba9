// Every mistake of a struct is reported in one build, and nothing else: the generated items
// still exist (as stubs), so code using them adds no follow-on errors.
use omni_runtime::prelude::*;

#[derive(Default)]
struct Session;

#[derive(Model, Clone, Default)]
#[model(rename_all = "kebab")]
struct Player {
    oid: u64,
    #[model(readonly)]
    _password: String,
    #[model(abc)]
    x: i32,
}

impl Permissions<Session> for Player {
    fn can_write(&self, _ctx: &Access<Session, Self>, change: &PlayerChange) -> bool {
        matches!(change, PlayerChange::X(_)) && PlayerAttr::X.index() == 1
    }
}

#[collection(model = Player)]
struct Players;

fn main() {
    let mut player = Player::default();
    let mut changed = omni_runtime::model::AttrSet::EMPTY;
    player.view_mut(&mut changed).set_x(1).set_password(String::new());
    let _ = Players::with([player]);
}
