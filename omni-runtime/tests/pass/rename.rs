#![deny(warnings, missing_docs, unreachable_pub)]
//! Renamed fields, rename_all, docs on everything, public items: no lint fires.

use omni_runtime::prelude::*;

/// A player.
#[derive(Model, Clone, Default)]
#[model(rename_all = "camelCase")]
pub struct Player {
    /// The display name.
    pub player_name: String,
    /// Horizontal position.
    #[model(rename = "posX")]
    pub x: i32,
    /// Best score, server-maintained.
    #[model(readonly)]
    pub high_score: u32,
    /// Never sent.
    pub _password: String,
    r#type: u8,
}

/// Snake case.
#[derive(Model, Clone, Default)]
#[model(rename_all = "snake_case", name = "Scoreboard")]
pub struct Scores {
    /// Top score.
    pub top_score: u32,
}

fn main() {
    assert_eq!(PlayerAttr::PlayerName.name(), "playerName");
    assert_eq!(PlayerAttr::X.name(), "posX");
    assert_eq!(PlayerAttr::HighScore.name(), "highScore");
    assert_eq!(PlayerAttr::Type.name(), "type");
    assert_eq!(ScoresAttr::TopScore.name(), "top_score");
    assert_eq!(Scores::NAME, "Scoreboard");
    let mut p = Player::default();
    let mut changed = omni_runtime::model::AttrSet::EMPTY;
    p.view_mut(&mut changed).set_type(3).set_player_name("x".into());
    assert_eq!(*p.view_mut(&mut changed).r#type(), 3);
}
