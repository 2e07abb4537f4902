"""Where answers come from: any OpenAI-compatible server, or the offline `lyceum-dev`."""
