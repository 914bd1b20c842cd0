"""What each `neardup` subcommand does, one module per family of commands (`cmd_*(settings, args) -> exit
code`). producer.cli builds the parser, loads the settings and turns exceptions into exit codes; the
lifecycle and calibrate commands live in producer.lifecycle and producer.calibrate."""
