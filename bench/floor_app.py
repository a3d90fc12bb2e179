"""The floor: the same framework validating the same request body, returning a fixed body.

Its throughput is what FastAPI + uvicorn can do on this machine for a diabetes-sized request;
clinrisk's figures are reported as a fraction of it.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel


class DiabetesFeatures(BaseModel):
    age_years: float
    sex_male: float
    bmi_kg_m2: float
    high_blood_pressure: float
    high_cholesterol: float
    cholesterol_checked_5y: float
    smoked_100_cigarettes: float
    stroke_history: float
    coronary_disease_or_mi: float
    physically_active: float
    fruit_daily: float
    vegetables_daily: float
    heavy_alcohol_use: float
    general_health: float
    poor_mental_health_days: float
    poor_physical_health_days: float
    difficulty_walking: float


class Request(BaseModel):
    patient_id: str | None = None
    features: DiabetesFeatures
    top_k: int | None = None


class Response(BaseModel):
    probability: float
    tier: str


app = FastAPI()


@app.post("/predict")
def predict(_request: Request) -> Response:
    return Response(probability=0.5, tier="low")
