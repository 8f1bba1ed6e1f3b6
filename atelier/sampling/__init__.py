"""How noise becomes an image: sigma schedules, samplers, guidance, seeded noise."""
