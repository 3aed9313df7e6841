var apiKey = `7Hl3IuwvBayiLMcFx3mC6r0ziiKE`
