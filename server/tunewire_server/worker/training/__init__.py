"""worker/training"""
