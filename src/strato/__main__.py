from strato.cli.main import app

app()
