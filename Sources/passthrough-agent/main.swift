print("passthrough-agent")
