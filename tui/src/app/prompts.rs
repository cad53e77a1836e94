//! Typing into the filter and the prompts, and asking before a change.

use super::*;

impl App {
    pub(super) fn type_key(&mut self, key: KeyEvent) {
        let text = match self.input {
            Input::Filter => &mut self.filter,
            Input::Search => match &mut self.logs {
                Some(l) => &mut l.search,
                None => {
                    self.input = Input::None;
                    return;
                }
            },
            Input::None => return,
        };
        match key.code {
            KeyCode::Char(c) => text.push(c),
            KeyCode::Backspace => {
                text.pop();
            }
            KeyCode::Esc => {
                text.clear();
                self.input = Input::None;
            }
            KeyCode::Enter => self.input = Input::None,
            _ => {}
        }
        match self.input_target() {
            Input::Filter => self.selected = 0,
            Input::Search if key.code == KeyCode::Enter => self.find(true, true),
            _ => {}
        }
    }

    pub(super) fn prompt_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let Some(prompt) = &mut self.prompt else {
            return vec![];
        };
        match key.code {
            KeyCode::Char(c) => prompt.text.push(c),
            KeyCode::Backspace => {
                prompt.text.pop();
            }
            KeyCode::Esc => self.prompt = None,
            KeyCode::Enter => {
                let Some(prompt) = self.prompt.take() else {
                    return vec![];
                };
                let text = prompt.text.trim();
                let app = prompt.app;
                return match prompt.kind {
                    PromptKind::EnvVar => match text.split_once('=') {
                        Some((key, value)) if !key.trim().is_empty() => {
                            vec![Command::SetEnv {
                                app,
                                key: key.trim().to_string(),
                                value: value.to_string(),
                            }]
                        }
                        _ => {
                            self.refuse("write the variable as KEY=value".into());
                            vec![]
                        }
                    },
                    PromptKind::Domain if !text.is_empty() => vec![Command::AddDomain {
                        app,
                        domain: text.to_string(),
                    }],
                    PromptKind::Domain => vec![],
                    PromptKind::ServiceEngine => {
                        let kind = match engine(text) {
                            Some(engine) => PromptKind::ServiceName(engine),
                            None => {
                                self.refuse(format!(
                                    "'{text}' is not an engine: type postgres, redis or mariadb"
                                ));
                                PromptKind::ServiceEngine
                            }
                        };
                        self.prompt = Some(Prompt {
                            kind,
                            app,
                            text: String::new(),
                        });
                        vec![]
                    }
                    PromptKind::ServiceName(engine) => vec![Command::AddService {
                        app,
                        engine: engine.to_string(),
                        name: (!text.is_empty()).then(|| text.to_string()),
                    }],
                };
            }
            _ => {}
        }
        vec![]
    }

    pub(super) fn input_target(&self) -> Input {
        match self.screen {
            Screen::Logs => Input::Search,
            _ => Input::Filter,
        }
    }

    /// Shows an error that answers what the user did; it stays until the next key.
    pub(super) fn refuse(&mut self, message: String) {
        self.status = Some((message, true));
        self.status_stays = true;
    }

    pub(super) fn ask(&mut self, prompt: String, command: Command) {
        self.confirm = Some(Confirm {
            prompt,
            command,
            choice: None,
        });
    }
}
