"""Core holds no tables; this module exists so that post_migrate is sent for the app."""
